export * as kho from './kho.js';
export * as kexecMetadata from './kexec-metadata.js';
export * as block from './block.js';
export * as luo from './luo.js';
export * as uapi from './uapi.js';
