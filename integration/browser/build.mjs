// build.mjs OUTFILE: bundles @uppy/core and @uppy/tus (as installed in
// node_modules) into one browser script defining window.UppyBundle =
// {Uppy, Tus}, for the test page. Run by integration/browser_test.go.
import { build } from "esbuild";

const outfile = process.argv[2];
if (!outfile) {
  console.error("usage: node build.mjs OUTFILE");
  process.exit(2);
}
await build({
  stdin: {
    contents: 'export { default as Uppy } from "@uppy/core";\nexport { default as Tus } from "@uppy/tus";\n',
    resolveDir: import.meta.dirname,
    sourcefile: "uppy-entry.js",
  },
  bundle: true,
  format: "iife",
  globalName: "UppyBundle",
  platform: "browser",
  target: "es2020",
  outfile,
  logLevel: "warning",
});
