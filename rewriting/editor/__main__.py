"""`python -m rewriting.editor [--host H] [--port P] [--output-dir D] [Hydra overrides]`: serve the editor."""
from __future__ import annotations

import logging
import sys


def main(argv: list[str] | None = None) -> None:
    from ..cli import report_error
    from ..cpu_memory import reuse_freed_memory
    reuse_freed_memory()
    from .config import compose_config, parse_arguments, session_from_config
    options, overrides = parse_arguments(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "httpx"):
        logging.getLogger(name).setLevel(logging.WARNING)  # Lightning's per-fit banners would flood the terminal
    try:
        session = session_from_config(compose_config(overrides), options.output_dir)
        from .app import launch
        print(f"rewriting editor: generator {getattr(session.generator, 'name', '?')} "
              f"({session.generator.checkpoint_path}); open http://{options.host}:{options.port} (Ctrl-C stops)",
              flush=True)
        launch(session, options.host, options.port, block=True)
    except (Exception, KeyboardInterrupt) as error:
        report_error(error)


if __name__ == "__main__":
    main()
