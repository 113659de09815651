"""Quality and stability metrics for inverted or edited videos.

* :mod:`vidinv.metrics.image`: SSIM, PSNR, MSE per frame, on the aligned crop and the full frame;
* :mod:`vidinv.metrics.lpips`: LPIPS, only from weights the user has on disk;
* :mod:`vidinv.metrics.identity`: dlib's 128-d face embedding (ID similarity);
* :mod:`vidinv.metrics.temporal`: TL-ID, TG-ID, flow warping error, crop and latent jitter.

Importing this package loads nothing heavy; models load on first use.
"""
