"""The COCO-Object converter on small synthetic COCO-Stuff-164k maps (GroupViT's mapping, spec Appendix D)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from ovseg.cli import main as cli_main
from ovseg.errors import OvsegError
from ovseg.evaluation import convert_coco_object
from ovseg.evaluation.coco_object import THING_IDS, coco_object_lut

# spec Appendix D, source id -> COCO-Object label, written out independently of the module's table
APPENDIX_D = {0: 1, 1: 2, 2: 3, 3: 4, 4: 5, 5: 6, 6: 7, 7: 8, 8: 9, 9: 10, 10: 11, 12: 12, 13: 13, 14: 14,
              15: 15, 16: 16, 17: 17, 18: 18, 19: 19, 20: 20, 21: 21, 22: 22, 23: 23, 24: 24, 26: 25, 27: 26,
              30: 27, 31: 28, 32: 29, 33: 30, 34: 31, 35: 32, 36: 33, 37: 34, 38: 35, 39: 36, 40: 37, 41: 38,
              42: 39, 43: 40, 45: 41, 46: 42, 47: 43, 48: 44, 49: 45, 50: 46, 51: 47, 52: 48, 53: 49, 54: 50,
              55: 51, 56: 52, 57: 53, 58: 54, 59: 55, 60: 56, 61: 57, 62: 58, 63: 59, 64: 60, 66: 61, 69: 62,
              71: 63, 72: 64, 73: 65, 74: 66, 75: 67, 76: 68, 77: 69, 78: 70, 79: 71, 80: 72, 81: 73, 83: 74,
              84: 75, 85: 76, 86: 77, 87: 78, 88: 79, 89: 80}


def stuff_map(values: list[int], width: int = 3) -> np.ndarray:
    """One row per value, ``width`` pixels each."""
    return np.repeat(np.array(values, dtype=np.uint8)[:, None], width, axis=1)


def write_maps(folder, maps: dict[str, np.ndarray]):
    folder.mkdir(parents=True, exist_ok=True)
    for name, arr in maps.items():
        Image.fromarray(arr, mode="L").save(folder / name)


def test_lookup_table_is_appendix_d():
    lut = coco_object_lut()
    assert len(THING_IDS) == 80
    assert {i: int(lut[i]) for i in APPENDIX_D} == APPENDIX_D
    assert all(lut[i] == 0 for i in range(91, 182)) and lut[255] == 0
    assert all(lut[i] == 255 for i in (11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90, 182, 254))


def test_convert_folder(tmp_path):
    src, dst = tmp_path / "annotations" / "val2017", tmp_path / "out"
    every_id = list(APPENDIX_D) + [91, 120, 181, 255]
    write_maps(src, {"000000000139.png": stuff_map(every_id), "000000000285.png": stuff_map([255, 0, 150]),
                     "000000000139_labelTrainIds.png": stuff_map([1])})  # converted files are skipped
    report = convert_coco_object(src, dst, workers=0, progress=False)
    assert report.written == 2 and not report.unknown
    assert sorted(p.name for p in dst.iterdir()) == ["000000000139_instanceTrainIds.png",
                                                     "000000000285_instanceTrainIds.png"]
    out = np.asarray(Image.open(dst / "000000000139_instanceTrainIds.png"))
    assert out.dtype == np.uint8 and out.shape == (84, 3)
    assert out[:, 0].tolist() == list(APPENDIX_D.values()) + [0, 0, 0, 0]
    assert np.asarray(Image.open(dst / "000000000285_instanceTrainIds.png"))[:, 1].tolist() == [0, 1, 0]


def test_unknown_ids_are_reported_and_ignored(tmp_path, caplog):
    write_maps(tmp_path / "src", {"a.png": stuff_map([11, 0, 11, 200])})
    report = convert_coco_object(tmp_path / "src", tmp_path / "dst", workers=0, progress=False)
    assert report.unknown == {11: 6, 200: 3}
    assert np.asarray(Image.open(tmp_path / "dst" / "a_instanceTrainIds.png"))[:, 0].tolist() == [255, 1, 255, 255]
    assert "neither COCO-Stuff things nor stuff" in caplog.text


def test_stuff_mode_and_process_pool(tmp_path):
    write_maps(tmp_path / "src", {f"{i:012d}.png": stuff_map([0, 89, 91, 181, 255]) for i in range(3)})
    report = convert_coco_object(tmp_path / "src", tmp_path / "dst", workers=2, stuff=True, progress=False)
    assert report.written == 3
    out = np.asarray(Image.open(tmp_path / "dst" / "000000000002_labelTrainIds.png"))
    assert out[:, 0].tolist() == [0, 79, 80, 170, 255]


def test_cli_and_bad_source(tmp_path, capsys):
    write_maps(tmp_path / "coco" / "annotations" / "val2017", {"x.png": stuff_map([0])})
    assert cli_main(["convert-coco-object", str(tmp_path / "coco" / "annotations" / "val2017"),
                     str(tmp_path / "out"), "--workers", "0", "--no-progress"]) == 0
    assert "wrote 1 label maps" in capsys.readouterr().out
    assert cli_main(["convert-coco-object", str(tmp_path / "coco"), str(tmp_path / "out2"), "--no-progress"]) == 2
    assert "did you mean" in capsys.readouterr().err
    with pytest.raises(OvsegError, match="no such folder"):
        convert_coco_object(tmp_path / "missing", tmp_path / "out3", progress=False)


def test_from_instances_json(tmp_path):
    pytest.importorskip("pycocotools")
    from ovseg.evaluation import convert_from_instances

    instances = {
        "images": [{"id": 139, "file_name": "000000000139.jpg", "height": 6, "width": 8}],
        "categories": [{"id": 1, "name": "person"}, {"id": 90, "name": "toothbrush"}],
        "annotations": [
            {"id": 1, "image_id": 139, "category_id": 1, "iscrowd": 0, "area": 24.0, "bbox": [0, 0, 6, 4],
             "segmentation": [[0, 0, 6, 0, 6, 4, 0, 4]]},
            {"id": 2, "image_id": 139, "category_id": 90, "iscrowd": 0, "area": 4.0, "bbox": [4, 2, 2, 2],
             "segmentation": [[4, 2, 6, 2, 6, 4, 4, 4]]},
        ],
    }
    path = tmp_path / "instances_val2017.json"
    path.write_text(json.dumps(instances))
    report = convert_from_instances(path, tmp_path / "dst", progress=False)
    out = np.asarray(Image.open(tmp_path / "dst" / "000000000139_instanceTrainIds.png"))
    assert report.written == 1 and out.shape == (6, 8)
    assert out[1, 1] == 1 and out[3, 5] == 80 and out[5, 7] == 0  # smaller object painted on top
