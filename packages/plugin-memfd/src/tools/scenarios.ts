/**
 * The scenarios plugin-memfd ships (`liveupdate run --scenario <name>`; 'three-vms' is the
 * CLI's default): guest RAM in memfds held by luod through one live update.
 */
import type { BuiltinScenario } from '@liveupdate/sdk';
import { PLUGIN_VERSION } from '../version.js';

const NAME = '@liveupdate/plugin-memfd';

export function memfdScenarios(): BuiltinScenario[] {
  return [
    {
      name: 'three-vms',
      defaultFor: ['run'],
      description: 'a 64 GiB, two-node host; three VMs keep their RAM in memfds held by luod, live updated from 7.1.0 to 7.2.0: pattern bytes, synthetic GiBs on hugeTLB pages, a sparse file and a never-written one',
      scenario: {
        name: 'three-vms',
        description: 'three VMs with memfd-backed RAM, sessions held by luod, live updated from 7.1.0 to 7.2.0',
        machine: { memory: '64GiB', numaNodes: 2 },
        from: { release: '7.1.0', plugins: { [NAME]: PLUGIN_VERSION } },
        to: { release: '7.2.0', plugins: { [NAME]: PLUGIN_VERSION } },
        broker: 'luod',
        sessions: [
          {
            name: 'vm-web',
            objects: [
              { token: 1, type: 'memfd', size: '16MiB', fill: 'pattern' },
              { token: 2, type: 'memfd', size: '32MiB', fill: 'synthetic' },
            ],
          },
          {
            name: 'vm-db',
            objects: [
              { token: 1, type: 'hugetlb-memfd', size: '2GiB', fill: 'synthetic' },
              { token: 2, type: 'memfd', size: '8MiB', fill: 'pattern', seals: ['shrink', 'grow'] },
            ],
          },
          {
            name: 'vm-batch',
            objects: [
              // Sparse: one page in 128 written; the holes stay holes through the update.
              { token: 1, type: 'memfd', size: '1GiB', fill: 'pattern', touched: 0.0078125 },
              { token: 2, type: 'memfd', size: '64MiB', fill: 'zero' },
            ],
          },
        ],
      },
    },
    {
      name: 'small',
      defaultFor: ['matrix', 'fuzz'],
      description: 'two VMs with one small memfd each (a sealed half-sparse pattern file; a synthetic one) on a 4 GiB machine: tens of milliseconds per update, for matrix and fuzz; no hugeTLB, so every release can carry it',
      scenario: {
        name: 'small',
        description: 'two VMs, one small memfd each (sealed half-sparse pattern; synthetic), live updated from 7.1.0 to 7.2.0',
        machine: { memory: '4GiB', numaNodes: 1 },
        from: { release: '7.1.0', plugins: { [NAME]: PLUGIN_VERSION } },
        to: { release: '7.2.0', plugins: { [NAME]: PLUGIN_VERSION } },
        broker: 'luod',
        sessions: [
          { name: 'vm-a', objects: [{ token: 1, type: 'memfd', size: '4MiB', fill: 'pattern', touched: 0.5, seals: ['shrink', 'grow'] }] },
          { name: 'vm-b', objects: [{ token: 1, type: 'memfd', size: '8MiB', fill: 'synthetic' }] },
        ],
      },
    },
    {
      name: 'hugetlb',
      description: 'one VM on 2 MiB hugeTLB pages (sparse synthetic) beside a small shmem memfd: shows the hugetlb FLB and, in a matrix, which releases cannot preserve hugeTLB memfds',
      scenario: {
        name: 'hugetlb',
        machine: { memory: '4GiB', numaNodes: 1 },
        from: { release: '7.1.0', plugins: { [NAME]: PLUGIN_VERSION } },
        to: { release: '7.2.0', plugins: { [NAME]: PLUGIN_VERSION } },
        broker: 'luod',
        sessions: [
          {
            name: 'vm-huge',
            objects: [
              { token: 1, type: 'hugetlb-memfd', size: '64MiB', fill: 'synthetic', touched: 0.5 },
              { token: 2, type: 'memfd', size: '1MiB', fill: 'pattern' },
            ],
          },
        ],
      },
    },
  ];
}
