import av


def test_fixture_media_decodes(media):
    with av.open(str(media.video)) as c:
        v = c.streams.video[0]
        assert (v.codec_context.width, v.codec_context.height) == (640, 360)
        assert sum(1 for _ in c.decode(v)) == 300
