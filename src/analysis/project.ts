import { resolve } from 'node:path';
import { Project, ts } from 'ts-morph';
import type * as TS from 'typescript';
import { CheckerEvidence } from './types.js';

/**
 * The ts-morph side of type-aware analysis (`kiln build --types`, `kiln explain`): load the project a set
 * of files belongs to — its tsconfig.json when there is one, else strict NodeNext defaults — and hand its
 * type checker to the analysis as evidence. Only this file loads ts-morph, and only when types are asked for.
 */

/**
 * Type evidence for `files`: the project of `tsconfig` (when given) with the files added (a file the
 * tsconfig leaves out is still analysed with the project's options), its imports resolved from disk.
 */
export function projectEvidence(files: readonly string[], tsconfig?: string): CheckerEvidence {
  const project = tsconfig
    ? new Project({ tsConfigFilePath: tsconfig, skipAddingFilesFromTsConfig: true })
    : new Project({
        compilerOptions: {
          target: ts.ScriptTarget.ES2022,
          module: ts.ModuleKind.NodeNext,
          moduleResolution: ts.ModuleResolutionKind.NodeNext,
          strict: true,
          skipLibCheck: true,
          allowJs: true,
        },
      });
  for (const f of files) project.addSourceFileAtPathIfExists(resolve(f));
  project.resolveSourceFileDependencies();
  // ts-morph bundles its own TypeScript; its compiler objects have the `typescript` package's API.
  return new CheckerEvidence(ts as unknown as typeof TS, project.getProgram().compilerObject as unknown as TS.Program);
}
