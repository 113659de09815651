"""vidinv: real-time video GAN inversion and face editing.

Importing the package does no work: no models are built, nothing is downloaded.
"""

__version__ = "0.1.0"
