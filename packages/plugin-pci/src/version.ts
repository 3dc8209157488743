import { createRequire } from 'node:module';
import type { PciAbi } from './pci-core.js';

/** The version of this copy of the plugin, from its own package.json (so side-by-side copies differ). */
export const PLUGIN_VERSION: string = (createRequire(import.meta.url)('../package.json') as { version: string }).version;

/** The pci_ser layout this release writes when the plugin is created without options (v7's kho_block). */
export const DEFAULT_PCI_ABI: PciAbi = 'v7';
