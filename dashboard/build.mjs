// Builds the console into dist/: one hashed JS bundle, one hashed CSS file, and index.html that
// loads them (no inline script or style, so the page runs under a strict Content-Security-Policy).
// Usage: node build.mjs [--outdir DIR]
import { build } from "esbuild";
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { gzipSync } from "node:zlib";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const flag = process.argv.indexOf("--outdir");
const outdir = flag > 0 ? process.argv[flag + 1] : join(here, "dist");

const result = await build({
  entryPoints: [join(here, "src/main.tsx")],
  bundle: true,
  minify: true,
  write: false,
  format: "esm",
  target: ["es2020"],
  jsx: "automatic",
  jsxImportSource: "preact",
  outdir: "out",
  legalComments: "none",
  define: { "process.env.NODE_ENV": '"production"' },
  logLevel: "warning",
});

rmSync(outdir, { recursive: true, force: true });
mkdirSync(join(outdir, "assets"), { recursive: true });
const names = {};
let gzipped = 0;
for (const file of result.outputFiles) {
  const ext = file.path.endsWith(".css") ? "css" : "js";
  const hash = createHash("sha256").update(file.contents).digest("hex").slice(0, 12);
  names[ext] = `assets/console-${hash}.${ext}`;
  writeFileSync(join(outdir, names[ext]), file.contents);
  gzipped += gzipSync(file.contents, { level: 9 }).length;
}
const html = readFileSync(join(here, "index.html"), "utf8")
  .replace("%SCRIPT%", `/${names.js}`)
  .replace("%STYLE%", `/${names.css}`);
writeFileSync(join(outdir, "index.html"), html);
console.log(`console built into ${outdir}: ${names.js}, ${names.css}; ${(gzipped / 1024).toFixed(1)} kB gzipped`);
