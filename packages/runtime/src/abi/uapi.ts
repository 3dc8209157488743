/**
 * include/uapi/linux/liveupdate.h: the ioctls on /dev/liveupdate and on session fds. Every
 * argument struct starts with __u32 size (extensible structs); all requests are _IO(0xBA, nr).
 */
import { bytes, defineStruct, s32, u32, u64 } from './struct.js';

export const LIVEUPDATE_IOCTL_TYPE = 0xba;
export const LIVEUPDATE_CMD_BASE = 0x00;
export const LIVEUPDATE_CMD_SESSION_BASE = 0x40;

const io = (nr: number): number => (LIVEUPDATE_IOCTL_TYPE << 8) | nr;

export const LIVEUPDATE_IOCTL_CREATE_SESSION = io(LIVEUPDATE_CMD_BASE + 0);
export const LIVEUPDATE_IOCTL_RETRIEVE_SESSION = io(LIVEUPDATE_CMD_BASE + 1);
export const LIVEUPDATE_SESSION_PRESERVE_FD = io(LIVEUPDATE_CMD_SESSION_BASE + 0);
export const LIVEUPDATE_SESSION_RETRIEVE_FD = io(LIVEUPDATE_CMD_SESSION_BASE + 1);
export const LIVEUPDATE_SESSION_FINISH = io(LIVEUPDATE_CMD_SESSION_BASE + 2);
export const LIVEUPDATE_SESSION_GET_NAME = io(LIVEUPDATE_CMD_SESSION_BASE + 3);

export const createSessionArgs = defineStruct('liveupdate_ioctl_create_session', { size: u32, fd: s32, name: bytes(64) }, { size: 72 });
export const retrieveSessionArgs = defineStruct('liveupdate_ioctl_retrieve_session', { size: u32, fd: s32, name: bytes(64) }, { size: 72 });
export const preserveFdArgs = defineStruct('liveupdate_session_preserve_fd', { size: u32, fd: s32, token: u64 }, { size: 16 });
export const retrieveFdArgs = defineStruct('liveupdate_session_retrieve_fd', { size: u32, fd: s32, token: u64 }, { size: 16 });
export const finishArgs = defineStruct('liveupdate_session_finish', { size: u32, reserved: u32 }, { size: 8 });
export const getNameArgs = defineStruct('liveupdate_session_get_name', { size: u32, reserved: u32, name: bytes(64) }, { size: 72 });

/** Open flags used by the model. */
export const O_RDWR = 0o2;
export const O_CLOEXEC = 0o2000000;
