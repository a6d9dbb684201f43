"""The speaker's face: detection, landmarks, the tracked choice of face, and the official LatentSync alignment.

Plain numpy/OpenCV/torch, no Prefect: usable from a notebook. The pipeline stage lives in `lipline.tasks.faces`.
"""
