// onnxruntime-web from the npm bundle; its WebAssembly file is served from this site, never a CDN.
import * as ort from "onnxruntime-web/wasm";
import wasmUrl from "onnxruntime-web/ort-wasm-simd-threaded.wasm?url";

ort.env.wasm.wasmPaths = { wasm: new URL(wasmUrl, import.meta.url).href };
ort.env.wasm.numThreads = 1; // threads need cross-origin isolation headers that a plain static server lacks

export { ort };

export async function loadManifest() {
  const response = await fetch("models/manifest.json", { cache: "no-store" });
  if (!response.ok) throw new Error("no models/manifest.json — run `make export-web` (or `make demo`) first");
  return response.json();
}

export function createSession(file) {
  return ort.InferenceSession.create(`models/${file}`, { executionProviders: ["wasm"] });
}

/** An image file (from an <input type=file>) as a decoded bitmap, EXIF orientation applied. */
export function decodeFile(file) {
  return createImageBitmap(file, { imageOrientation: "from-image" });
}

/** Width and height of anything drawImage takes (bitmap, image, video frame). */
export function sizeOf(source) {
  return [source.videoWidth || source.naturalWidth || source.width, source.videoHeight || source.naturalHeight || source.height];
}

/** A built-in example image listed in the manifest (`models/examples/…`), as the Blob an upload would give. */
export async function fetchExample(file) {
  const response = await fetch(`models/${file}`);
  if (!response.ok) throw new Error(`example models/${file}: HTTP ${response.status}; run make export-web again`);
  return response.blob();
}
