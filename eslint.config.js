// Lint: typescript-eslint's recommended rules plus the project's layering (ir <- passes <- targets <- cli;
// kernels and runtime are leaves). Formatting is prettier's job, so eslint-config-prettier turns style rules off.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import prettier from 'eslint-config-prettier';

const banned = (...layers) => ({
  'no-restricted-imports': [
    'error',
    {
      patterns: layers.map((l) => ({
        group: [`**/${l}/*`, `**/${l}`],
        message: `layers only look down: this folder must not import ${l}/`,
      })),
    },
  ],
});

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'out/**', 'test-artifacts/**', '**/*.mjs', '**/*.js'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  prettier,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      // Walking a graph's parent chain starts from `this`; an alias is the plain way to write it.
      '@typescript-eslint/no-this-alias': 'off',
    },
  },
  // Tests poke at raw protobuf objects on purpose.
  { files: ['test/**/*.ts'], rules: { '@typescript-eslint/no-explicit-any': 'off' } },
  { files: ['ir/**/*.ts'], rules: banned('passes', 'targets', 'cli', 'runtime', 'kernels') },
  { files: ['passes/**/*.ts'], rules: banned('targets', 'cli') },
  { files: ['targets/**/*.ts'], rules: banned('cli') },
  { files: ['kernels/**/*.ts'], rules: banned('passes', 'targets', 'cli', 'runtime') },
  { files: ['runtime/**/*.ts'], rules: banned('targets', 'cli') },
);
