export const pciTools = {};
