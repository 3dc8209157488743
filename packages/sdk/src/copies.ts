/**
 * One SDK, one runtime. A plugin made by a second copy of @liveupdate/sdk (a plugin that
 * bundled or pinned its own) carries that copy's ErrnoError, Kernel and runtime: an error it
 * throws is not an ErrnoError to our runtime (it silently becomes EIO) and its kernel types
 * are not ours. Every plugin records the copies that made it; the tools and the harness
 * compare them with their own when the plugin loads and refuse a mismatch by name.
 */
import { createRequire } from 'node:module';
import { ErrnoError, Kernel } from '@liveupdate/runtime';
import { SDK_VERSION } from './version.js';

export interface SdkIdentity {
  /** Where this copy of the SDK lives (its module URL). */
  readonly sdk: string;
  readonly sdkVersion: string;
  /** Where the runtime it uses lives, when it can be told. */
  readonly runtime: string;
  /** The runtime's classes, compared by identity. */
  readonly kernelClass: unknown;
  readonly errnoClass: unknown;
}

function runtimeLocation(): string {
  try {
    return createRequire(import.meta.url).resolve('@liveupdate/runtime');
  } catch {
    return '@liveupdate/runtime (location unknown)';
  }
}

export const SDK_IDENTITY: SdkIdentity = Object.freeze({
  sdk: import.meta.url, sdkVersion: SDK_VERSION, runtime: runtimeLocation(), kernelClass: Kernel, errnoClass: ErrnoError,
});

/** A plugin built on another copy of the SDK or the runtime than the one loading it. */
export class DuplicateSdkError extends Error {
  override readonly name = 'DuplicateSdkError';
  constructor(readonly plugin: string, readonly what: '@liveupdate/sdk' | '@liveupdate/runtime', readonly theirs: string, readonly ours: string) {
    super(`${plugin} was made by a second copy of ${what} (${theirs}); this process uses ${ours}. `
      + `Install ${what} once: plugins list it as a peerDependency, not a dependency (npm ls ${what} shows the copies).`);
  }
}

/** Throw DuplicateSdkError when `plugin` was not made by this copy of the SDK and runtime. */
export function checkSdkCopy(plugin: { readonly sdkIdentity?: SdkIdentity }, label: string): void {
  const theirs = plugin.sdkIdentity;
  if (!theirs) return;
  if (theirs.errnoClass !== SDK_IDENTITY.errnoClass || theirs.kernelClass !== SDK_IDENTITY.kernelClass) {
    if (theirs.sdk !== SDK_IDENTITY.sdk) throw new DuplicateSdkError(label, '@liveupdate/sdk', `${theirs.sdk}, ${theirs.sdkVersion}`, `${SDK_IDENTITY.sdk}, ${SDK_IDENTITY.sdkVersion}`);
    throw new DuplicateSdkError(label, '@liveupdate/runtime', theirs.runtime, SDK_IDENTITY.runtime);
  }
  if (theirs.sdk !== SDK_IDENTITY.sdk) throw new DuplicateSdkError(label, '@liveupdate/sdk', `${theirs.sdk}, ${theirs.sdkVersion}`, `${SDK_IDENTITY.sdk}, ${SDK_IDENTITY.sdkVersion}`);
}
