// The DCGAN pane: a grid of generated images from seeded noise.
import { ort } from "./runtime.js";
import { normalNoise } from "./noise.js";

export const GRID_COLUMNS = 4;
export const GRID_ROWS = 4;
export const PAD = 2;

/** Run the generator on `GRID_COLUMNS × GRID_ROWS` noise vectors from `seed`; paint them on `canvas`.
 * Returns the tile size and the noise used (row-major, count × latent_dim). */
export async function generateGrid(session, entry, seed, canvas) {
  const count = GRID_COLUMNS * GRID_ROWS;
  const z = new ort.Tensor("float32", normalNoise(seed, count * entry.latent_dim), [count, entry.latent_dim]);
  const images = (await session.run({ [entry.input]: z }))[entry.output];
  const [, channels, height, width] = images.dims;
  canvas.width = GRID_COLUMNS * (width + PAD) + PAD;
  canvas.height = GRID_ROWS * (height + PAD) + PAD;
  const context = canvas.getContext("2d");
  context.fillStyle = "#000";
  context.fillRect(0, 0, canvas.width, canvas.height);
  const [low, high] = entry.output_range;
  const tile = context.createImageData(width, height);
  const plane = width * height;
  for (let n = 0; n < count; n++) {
    for (let p = 0; p < plane; p++) {
      for (let c = 0; c < 3; c++) {
        const value = images.data[n * channels * plane + c * plane + p];
        tile.data[4 * p + c] = Math.round(((value - low) / (high - low)) * 255); // Uint8ClampedArray clamps
      }
      tile.data[4 * p + 3] = 255;
    }
    const x = PAD + (n % GRID_COLUMNS) * (width + PAD);
    const y = PAD + Math.floor(n / GRID_COLUMNS) * (height + PAD);
    context.putImageData(tile, x, y);
  }
  return { seed, count, width, height, z: Array.from(z.data) };
}
