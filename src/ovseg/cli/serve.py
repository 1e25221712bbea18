"""ovseg serve: a local web page to segment photos with any vocabulary (needs the ``web`` extra)."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import signal
from pathlib import Path

from ..errors import OvsegError
from .common import resolve_device

HELP = "Start a local web page: upload a photo, type classes, see the segmentation (pip install 'ovseg[web]')."
EXAMPLE = "ovseg serve --resume ovsegmentor.pth    # then open http://127.0.0.1:7860"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--resume", "--checkpoint", dest="resume", metavar="CKPT",
                   help="checkpoint (official .pth or ovseg .safetensors)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: %(default)s, this machine only; 0.0.0.0 opens the page "
                   "to the network)")
    p.add_argument("--port", type=int, default=7860, help="port (default: %(default)s)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N (default: cuda when available)")
    p.add_argument("--max-upload-mb", type=float, default=20.0, metavar="MB",
                   help="largest upload accepted, in MB (default: %(default)g)")
    p.add_argument("--max-pixels", type=float, default=50e6, metavar="N",
                   help="largest image accepted, width × height (default: %(default).0f)")
    p.add_argument("--max-synonyms", type=int, default=16, metavar="N",
                   help="most names joined with | in one class (default: %(default)s)")
    p.add_argument("--max-prompts", type=int, default=20_480, metavar="N",
                   help="most prompts one request may embed, names × templates (default: %(default)s: 256 "
                   "classes with the full 80 templates)")
    p.add_argument("--cached-vocabularies", type=int, default=32, metavar="N",
                   help="how many vocabularies' text embeddings are kept, least recently used dropped first "
                   "(default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    from ..inference import Segmenter
    from ..web import WebLimits, WebSession

    _check(args)
    app_module = _import_app()
    limits = WebLimits(max_upload_mb=args.max_upload_mb, max_pixels=int(args.max_pixels),
                       max_synonyms=args.max_synonyms, max_prompts=args.max_prompts,
                       cached_vocabularies=args.cached_vocabularies)
    session = WebSession(Segmenter.from_checkpoint(args.resume, device=resolve_device(args.device)), limits)
    app = app_module.build_app(session, title=Path(args.resume).name)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's own start-up checks of the local URL
    if not _is_loopback(args.host):
        print(f"ovseg serve: warning: listening on {args.host}: anyone who can reach this machine can use the page")
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill` stops it as Ctrl+C does: cleanly
    try:
        app_module.launch(app, args.host, args.port, limits)
        host = f"[{args.host}]" if ":" in args.host else args.host
        print(f"ovseg serve: http://{host}:{args.port}  (Ctrl+C to stop)", flush=True)
        app.block_thread()
    finally:
        session.close()
    return 0


def _import_app():
    try:
        from ..web import app
    except ModuleNotFoundError as e:
        if e.name and e.name.split(".")[0] == "gradio":
            raise OvsegError("the web page needs Gradio: pip install 'ovseg[web]'") from e
        raise
    return app


def _check(args: argparse.Namespace) -> None:
    if not args.resume:
        raise OvsegError("--resume CHECKPOINT is required (an official .pth or an ovseg .safetensors)")
    if not 0 < args.port < 65536:
        raise OvsegError(f"--port: expected 1-65535, got {args.port}")
    if args.max_upload_mb <= 0 or args.max_pixels <= 0:
        raise OvsegError("--max-upload-mb and --max-pixels must be positive")
    for flag in ("max_synonyms", "max_prompts", "cached_vocabularies"):
        if getattr(args, flag) < 1:
            raise OvsegError(f"--{flag.replace('_', '-')} must be at least 1, got {getattr(args, flag)}")


def _is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost: only this machine can connect."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
