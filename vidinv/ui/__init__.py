"""``vidinv ui``: a local web page over the same pipeline calls as ``vidinv edit``.

:mod:`vidinv.ui.session` holds what the page works on (clips, the open model, the cached
preview frame, render jobs) and :mod:`vidinv.ui.server` serves it on 127.0.0.1 with the
standard library's HTTP server and a small JSON API; the page is ``page.html`` beside them.
"""
