/**
 * `node --import kiln/register app.ts`: run TypeScript with kiln/plugin applied (types stripped by Babel,
 * results cached under node_modules/.cache/kiln). See ./hooks.ts. Source maps are on, so stack traces
 * point at the TypeScript the user wrote, without `--enable-source-maps`.
 */
import { register } from 'node:module';

process.setSourceMapsEnabled(true);
register('./hooks.js', import.meta.url);
