"""From a study's chosen row to a landslide map: export a trial, predict on GeoTIFF scenes.

Reads the results store and builds models (rmaunet.models); never imports the study
engine. `export.export_model` writes a self-contained model folder, `predict.predict_scene`
maps one scene, `scenes.predict_scenes` many (on Ray when asked). Submodules are imported
where used: `rmaunet --help` stays free of TensorFlow, rasterio and pandas.
"""
