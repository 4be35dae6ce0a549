"""A web page to stylize photos and a webcam live, built on Gradio (``pip install -e ".[web]"``).

``nst-fast serve`` runs ``serve``; from Python::

    from nst_fast.web import build_app, serve

    serve(["outputs/"])  # prints the address, serves until interrupted
    app = build_app(["outputs/demo/model.pt"])  # a gradio.Blocks to launch or mount yourself

The page stylizes as ``nst-fast stylize`` does (``batch.stylize_paths``): the same model
loading, precision, strength, colour preservation, output size (the longer side) and
tiling of photos too large for one pass. It reads the model files it is given and the
photos visitors upload, nothing else: a style image is shown as a thumbnail when the
model generates it (``generated:...``) or when the file lies inside a path given.

By concept: ``models`` (the model files a page offers), ``uploads`` (what a visitor
sends, checked), ``engine`` (the stylizing shared among visitors) and ``page`` (the
Gradio page and ``serve``).
"""

from nst_fast.web.engine import Engine, make_engine
from nst_fast.web.page import build_app, serve

__all__ = ["Engine", "build_app", "make_engine", "serve"]
