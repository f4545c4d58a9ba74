"""The FastAPI service example (see ``app.py``); ``settings.py`` builds the runtime from the environment."""
