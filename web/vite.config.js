import { defineConfig } from "vite";

// A static page: `npm run build` writes dist/, `npm run preview` serves it on 127.0.0.1.
// PLAYGROUND_PUBLIC swaps the folder copied beside the page (models/), so tests build with their own models.
export default defineConfig({
  base: "./",
  appType: "mpa", // a missing file is a 404, not the page again (a missing manifest must read as missing)
  publicDir: process.env.PLAYGROUND_PUBLIC || "public",
  build: { chunkSizeWarningLimit: 1024 },
  server: { host: "127.0.0.1" },
  preview: { host: "127.0.0.1" },
  optimizeDeps: { exclude: ["onnxruntime-web"] },
});
