"""`sluice console`: a read-only web console over what Git, Prometheus and the V2 endpoint say.

Data gathering (releases.py, live.py, forecast.py) is plain functions returning dataclasses; the web
layer (app.py, templates/) only renders them; server.py runs it with uvicorn.
"""
