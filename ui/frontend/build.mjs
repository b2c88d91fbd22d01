// Copies the graph layout library's distribution file (and its licence) into the Python
// package's static folder, where the wheel ships it: a clean clone needs no npm.
import { copyFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const target = join(here, "..", "..", "src", "memodag", "ui", "static", "vendor");
const dagre = join(here, "node_modules", "@dagrejs", "dagre");
mkdirSync(target, { recursive: true });
copyFileSync(join(dagre, "dist", "dagre.min.js"), join(target, "dagre.min.js"));
copyFileSync(join(dagre, "LICENSE"), join(target, "dagre.LICENSE"));
// the licences of what the minified file bundles (graphlib), which it points at
copyFileSync(
  join(dagre, "dist", "dagre.min.js.LEGAL.txt"),
  join(target, "dagre.min.js.LEGAL.txt"),
);
console.log(`copied @dagrejs/dagre into ${target}`);
