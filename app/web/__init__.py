"""The web explorer: thin FastAPI views over the engine. Every page is a URL with a JSON twin."""

from .app import create_app

__all__ = ["create_app"]
