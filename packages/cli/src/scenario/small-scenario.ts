/**
 * The scenario `liveupdate matrix` and `liveupdate fuzz` run without a file: two VMs with one
 * small memfd each (a sealed, half-sparse pattern file and a synthetic one) on a small machine, so
 * one live update takes tens of milliseconds and a 4x4 matrix or 50 fuzz runs take seconds.
 * No hugeTLB: every released plugin-memfd can carry it, so the matrix measures the memfd
 * format negotiation alone.
 */
import type { Scenario } from '@liveupdate/sdk';
import { MEMFD_PLUGIN } from '../plugins.js';

export const SMALL_SCENARIO: Scenario = {
  name: 'small',
  description: 'two VMs, one small memfd each (sealed half-sparse pattern; synthetic), live updated from 7.1.0 to 7.2.0',
  machine: { memory: '4GiB', numaNodes: 1 },
  from: { release: '7.1.0', plugins: { [MEMFD_PLUGIN]: '3.1.0' } },
  to: { release: '7.2.0', plugins: { [MEMFD_PLUGIN]: '3.1.0' } },
  broker: 'luod',
  sessions: [
    { name: 'vm-a', files: [{ token: 1, type: 'memfd', size: '4MiB', fill: 'pattern', touched: 0.5, seals: ['shrink', 'grow'] }] },
    { name: 'vm-b', files: [{ token: 1, type: 'memfd', size: '8MiB', fill: 'synthetic' }] },
  ],
};
