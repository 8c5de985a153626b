"""DCGAN: the paper's three experiments. `module.DCGAN` (the LightningModule), `nets` (generator and discriminator),
`quality` (FID, KID, diversity of the samples), `data` (the image-folder datamodule), `onnx` (the generator's export)."""

import core  # noqa: F401  (offline switches before mlflow/torchmetrics are imported)
