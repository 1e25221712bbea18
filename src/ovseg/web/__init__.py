"""The local web page (``ovseg serve``). ``session`` holds what the page does and needs no web framework;
``app`` is the Gradio page over it (the ``web`` extra: ``pip install 'ovseg[web]'``)."""

from .session import LegendRow, WebLimits, WebResult, WebSession, page_message, parse_classes, read_upload

__all__ = ["LegendRow", "WebLimits", "WebResult", "WebSession", "page_message", "parse_classes", "read_upload"]
