"""`make demo`: generate sample media, run the main job on embedded defaults, print where the deliverable is."""

from __future__ import annotations

import sys
from pathlib import Path

from lipline import samples
from lipline.settings import get_settings


def make_demo_media(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    face = samples.face_png(folder / "face.png")
    original = samples.write_audio(folder / "original-speech.wav", samples.speech_like(10.0, seed=3))
    return {
        "video": samples.talking_video(folder / "talking-head.mp4", face, 10.0, 1280, 720, 25, audio=original),
        "audio": samples.write_audio(folder / "dub.wav", samples.speech_like(11.5, level_db=-26.0, seed=7)),
        "subtitles": samples.subtitles(folder / "subtitles.srt"),
        "intro": samples.bumper(folder / "intro.mp4", 2.0, 1920, 1080, 30, with_audio=False),
        "outro": samples.bumper(folder / "outro.mp4", 2.0, 640, 480, 25, with_audio=True),
    }


def main() -> int:
    folder = get_settings().demo_dir.absolute()
    print(f"making sample media in {folder}/ ...", file=sys.stderr)
    media = make_demo_media(folder)
    from lipline.cli import main as cli_main

    sys.argv = ["lipline", "run", str(media["video"]), str(media["audio"]), "--subtitles", str(media["subtitles"]),
                "--intro", str(media["intro"]), "--outro", str(media["outro"]), "--job-id", "demo", "--replace"]
    cli_main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
