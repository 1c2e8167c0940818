"""Run the platform API process: ``python -m mlplatform.api --port N ...``.

Started by ``mlplatform up``; it learns where the other components listen from its
arguments and everything else from ``MLPLATFORM_*`` settings.
"""

import argparse
import logging
from pathlib import Path

import uvicorn

from mlplatform import __version__
from mlplatform.api.app import create_app
from mlplatform.logs import configure_logging
from mlplatform.platform import Platform, Wiring
from mlplatform.settings import Settings

logger = logging.getLogger("mlplatform.api")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m mlplatform.api")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tracking-url", required=True)
    parser.add_argument("--dynamic-dir", type=Path, required=True)
    args = parser.parse_args()

    configure_logging()
    settings = Settings()
    api_url = f"http://127.0.0.1:{args.port}"
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    entrance_url = f"http://{host}:{settings.port}"
    wiring = Wiring(args.tracking_url, api_url, args.dynamic_dir, entrance_url)
    logger.info(
        "mlplatform %s API starting; home %s", __version__, settings.resolved_home()
    )
    logger.info("platform API listening on %s", api_url)
    app = create_app(Platform(settings, wiring))
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        log_config=None,
        access_log=False,  # our AccessLog middleware writes one line per request
        timeout_graceful_shutdown=30,
    )


if __name__ == "__main__":
    main()
