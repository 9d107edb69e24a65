// Where the ONNX spec's own test data lives: Debian's libonnx-testdata (the same files as onnx's
// onnx/backend/test/data), or EDGEC_CONFORMANCE. A missing corpus fails loudly with the fix:
// a suite that silently skipped would pass on exactly the machines that check nothing.
import fs from 'node:fs';
import path from 'node:path';

export const DEFAULT_CONFORMANCE = '/usr/share/libonnx-testdata/data';

function conformanceRoot(): string {
  const root = path.resolve(process.env.EDGEC_CONFORMANCE || DEFAULT_CONFORMANCE);
  if (!fs.existsSync(path.join(root, 'node'))) {
    throw new Error(
      `ONNX conformance corpus not found at ${root}: install Debian's libonnx-testdata ` +
        '(apt-get install -y libonnx-testdata), or set EDGEC_CONFORMANCE to a folder holding node/, ' +
        'pytorch-converted/, pytorch-operator/ and simple/ (onnx/backend/test/data of the onnx package)',
    );
  }
  return root;
}

export const CONFORMANCE = conformanceRoot();
