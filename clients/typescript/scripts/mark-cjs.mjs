// dist/cjs holds CommonJS in a package whose "type" is "module": a
// package.json of its own tells Node so.
import { writeFileSync } from 'node:fs';
writeFileSync(new URL('../dist/cjs/package.json', import.meta.url), '{ "type": "commonjs" }\n');
