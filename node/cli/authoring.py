"""``drupelet actor build`` and ``drupelet actor new``: writing Python actors on a laptop.

``actor new NAME`` copies the skeleton shipped in the wheel (``drupelet.actors``'
``templates/python/``) into a new directory; ``actor build`` turns such a directory into
a component with componentize-py, saying what it does while it runs.
"""

from __future__ import annotations

import argparse
import importlib.resources
import re
import sys
from pathlib import Path

from drupelet.node.cli.common import CliError
from drupelet.node.cli.output import emit

TEMPLATE = "templates/python"
"""The skeleton's directory inside the ``drupelet.actors`` package; each ``*.in`` file becomes
the file without ``.in``, with ``@NAME@`` and ``@DIR@`` filled in."""
ACTOR_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
"""A new actor's name: also its Python log context and its directory name, so lower-case."""


def build(args: argparse.Namespace) -> int:
    from drupelet.node.tools.build import build_if_changed, current_build, load_actor_spec

    tty = sys.stderr.isatty() and not args.json
    found = None if args.force else current_build(args.dir, args.output)
    if found is None and not args.json and args.dir.is_dir():
        spec = load_actor_spec(args.dir)
        print(f"building {args.dir} (module {spec.module}, world {spec.world}) with componentize-py "
              f"into {args.output}; this takes 10 to 20 s on a laptop, minutes on a Pi", file=sys.stderr, flush=True)

    def progress(elapsed_s: float) -> None:
        if tty:
            spinner = "|/-\\"[int(elapsed_s * 4) % 4]
            sys.stderr.write(f"\r{spinner} componentize-py is running: {elapsed_s:.0f} s ")
            sys.stderr.flush()

    try:
        result = found or build_if_changed(args.dir, args.output, force=args.force, progress=progress)
    finally:
        if tty and found is None:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
    doc = {"output": str(result.output), "size_bytes": result.size_bytes, "sha256": result.sha256,
           "seconds": round(result.seconds, 2), "up_to_date": result.up_to_date}
    if result.up_to_date:
        text = (f"{result.output} is up to date with {args.dir} (sha256 {result.sha256[:16]}…); "
                "--force rebuilds it")
    else:
        text = (f"built {result.output} ({result.size_bytes / 1e6:.1f} MB, sha256 {result.sha256[:16]}…) "
                f"in {result.seconds:.1f} s")
    emit(args, doc, text, one_line=True)
    return 0


def new(args: argparse.Namespace) -> int:
    name: str = args.name
    if not ACTOR_NAME.match(name):
        raise CliError(f"{name!r} is not a name for a new actor: use 1-63 of a-z 0-9 _ -, starting with a letter")
    target: Path = args.dir if args.dir is not None else Path(name)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise CliError(f"{target} already exists and is not an empty directory; choose another with --dir")
    template = importlib.resources.files("drupelet.actors").joinpath(TEMPLATE)
    files = sorted((f for f in template.iterdir() if f.name.endswith(".in")), key=lambda f: f.name)
    if not files:
        raise CliError(f"the actor template is not installed (drupelet.actors/{TEMPLATE}); reinstall drupelet")
    written = []
    try:
        target.mkdir(parents=True, exist_ok=True)
        for f in files:
            text = f.read_text(encoding="utf-8").replace("@NAME@", name).replace("@DIR@", str(target))
            path = target / f.name.removesuffix(".in")
            path.write_text(text, encoding="utf-8")
            written.append(path)
    except OSError as exc:
        raise CliError(f"cannot write {target}: {exc.strerror}") from None
    emit(args, {"name": name, "dir": str(target), "files": [str(p) for p in written]},
         f"wrote {', '.join(str(p) for p in written)}\n"
         f"next: drupelet actor build {target} -o {name}.wasm  (then see {target / 'README.md'})")
    return 0
