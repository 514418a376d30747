"""``python -m gateway.simulator [--host H] [--port P] [--ttfb-ms N] [--chunk-delay-ms N] [--words N]``."""

from __future__ import annotations

import argparse

from .app import serve


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gateway.simulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8900)
    parser.add_argument("--ttfb-ms", type=float, default=0)
    parser.add_argument("--chunk-delay-ms", type=float, default=0)
    parser.add_argument("--words", type=int, default=None)
    parser.add_argument("--split-writes", action="store_true")
    args = parser.parse_args(argv)
    print(f"simulators on http://{args.host}:{args.port}/<provider>/v1", flush=True)
    serve(
        args.host,
        args.port,
        ttfb_ms=args.ttfb_ms,
        chunk_delay_ms=args.chunk_delay_ms,
        words=args.words,
        split_writes=args.split_writes,
    )


if __name__ == "__main__":
    main()
