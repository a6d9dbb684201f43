"""The operator portal (`lipline portal serve`): log in, upload media into the store, check it against the data
contracts, start a `localize` job, watch it, preview the result beside the original and download it.

FastAPI with server-rendered Jinja2 templates and a little plain JavaScript (no front-end build step). Like the
CLI, nothing here imports torch: the portal runs on a small machine.
"""
