#!/usr/bin/env node
/** The `liveupdate` executable. Exit codes: see `liveupdate --help` (0 ok, 1 failed, 2 usage, 3 internal). */
import { main } from './program.js';

process.exitCode = await main(process.argv);
