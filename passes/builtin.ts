// Registers every built-in pass. One import and one line per pass file.
import { registerPass } from './registry.js';

for (const p of [
]) registerPass(p);
