/**
 * KHO xarray layout (after the KHO xarray work in the prati0100/linux dev tree): a sparse map
 * from 54-bit keys to u64 values, 6 levels of one-page nodes, 9 key bits per level. Table
 * nodes hold 512 u64 physical addresses (0 = empty); leaves hold 512 u64 values (0 = empty).
 * Any change here is a breaking change of every format that embeds an xarray.
 */
export const KHO_XA_VERSION = '1.0.0';
export const KHO_XA_KEY_BITS = 54;
export const KHO_XA_LEVEL_BITS = 9;
export const KHO_XA_DEPTH = 6;
export const KHO_XA_SLOTS = 512;
