"""The ceiling: a FastAPI app that validates /predict's body and answers a constant.

No model, no middleware, no metrics: what FastAPI costs for this request and nothing else.
`bench/run.py` serves it exactly like the real service (`app.http.server.serve`, same workers and
uvicorn settings), so the ratio /predict ÷ ceiling says how close the service gets to the
framework's own limit on this machine, whatever else the machine is doing.

    python bench/ceiling_app.py   # HOST, PORT, WORKERS as for `make serve`
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from fastapi import FastAPI

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.api.schemas import PredictRequest

ANSWER: dict[str, Any] = {
    "label": "positive",
    "score": 0.9123,
    "probabilities": {"negative": 0.0311, "neutral": 0.0566, "positive": 0.9123},
    "model": {"name": "ceiling", "version": "000000000000"},
}

# FastAPI's OpenTelemetry hooks off, as in the service (`app.main`; importing it here would
# load torch into the ceiling too).
app = FastAPI(
    docs_url=None,
    redoc_url=None,
    openapi_url=None,
    telemetry={"tracing": False, "metrics": False, "logs": False},
)


@app.post("/predict")
async def predict(body: PredictRequest) -> dict[str, Any]:
    """Validate the body like the real route; answer a constant."""
    return ANSWER


@app.get("/readyz")
async def readyz() -> dict[str, str]:
    return {"status": "ready"}


if __name__ == "__main__":
    from app.core.config import ServerSettings
    from app.core.logging import configure_logging
    from app.http.server import serve

    configure_logging("INFO", "json")

    sys.path.insert(0, str(Path(__file__).resolve().parent))  # workers import `ceiling_app`
    sys.exit(serve("ceiling_app:app", ServerSettings()))
