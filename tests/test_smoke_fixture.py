import ovseg


def test_tiny_checkpoint_segments_a_photo(tiny_checkpoint, photos):
    seg = ovseg.Segmenter.from_checkpoint(tiny_checkpoint)
    pred = seg.predict(photos["coffee"], ["cup", "table"])
    assert pred.labels.shape == photos["coffee"].shape[:2]
    assert pred.class_names == ["background", "cup", "table"]
