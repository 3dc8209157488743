/** The SDK contract version (what plugins' `sdk` ranges are checked against by the runtime). */
export { SDK_API_VERSION as SDK_VERSION } from '@liveupdate/runtime';
