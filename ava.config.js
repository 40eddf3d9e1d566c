// TypeScript tests run straight from source through the tsx loader. Worker threads would skip the
// loader, so each test file runs in its own child process instead.
export default {
  files: ['test/**/*.test.ts'],
  extensions: { ts: 'module' },
  nodeArguments: ['--import=tsx'],
  workerThreads: false,
  timeout: '2m',
};
