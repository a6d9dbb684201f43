"""Audio-visual sync measurement (weight-free estimator and SyncNet LSE-C/LSE-D), pure math; no Prefect here.

* `mouth` — per-frame mouth opening from a face track's lip landmarks, normalised by the inter-ocular distance.
* `envelope` — the speech energy envelope of the audio at the video frame rate.
* `offset` — normalised cross-correlation over ±15 frames → `SyncEstimate` (offset, peak, confidence, verdict).
* `measure` — `measure_video`: the three above on a video file (reusing a face track when given).
* `syncnet` — the ``syncnet_v2`` architecture and LSE-C / LSE-D, only when the user gives SyncNet weights
  (imports torch; nothing else in this package does).

Sign convention everywhere: a **positive offset means the audio is late** (a sound is heard after the mouth moves).
"""
