/**
 * The scenario `liveupdate run` runs without a file: a 64 GiB, two-node host whose three VMs
 * keep their RAM in memfds held by luod through one live update from 7.1.0 to 7.2.0. It mixes
 * real pattern bytes, synthetic GiBs on hugeTLB pages, a sparse file and a never-written one,
 * and stays fast (a few seconds) so `npm run demo` is quick.
 */
import type { Scenario } from '@liveupdate/sdk';
import { MEMFD_PLUGIN } from '../plugins.js';

export const DEFAULT_SCENARIO: Scenario = {
  name: 'three-vms',
  description: 'three VMs with memfd-backed RAM, sessions held by luod, live updated from 7.1.0 to 7.2.0',
  machine: { memory: '64GiB', numaNodes: 2 },
  from: { release: '7.1.0', plugins: { [MEMFD_PLUGIN]: '3.1.0' } },
  to: { release: '7.2.0', plugins: { [MEMFD_PLUGIN]: '3.1.0' } },
  broker: 'luod',
  sessions: [
    {
      name: 'vm-web',
      files: [
        { token: 1, type: 'memfd', size: '16MiB', fill: 'pattern' },
        { token: 2, type: 'memfd', size: '32MiB', fill: 'synthetic' },
      ],
    },
    {
      name: 'vm-db',
      files: [
        { token: 1, type: 'hugetlb-memfd', size: '2GiB', fill: 'synthetic' },
        { token: 2, type: 'memfd', size: '8MiB', fill: 'pattern', seals: ['shrink', 'grow'] },
      ],
    },
    {
      name: 'vm-batch',
      files: [
        // Sparse: one page in 128 written; the holes stay holes through the update.
        { token: 1, type: 'memfd', size: '1GiB', fill: 'pattern', touched: 0.0078125 },
        { token: 2, type: 'memfd', size: '64MiB', fill: 'zero' },
      ],
    },
  ],
};
