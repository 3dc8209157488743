/**
 * The libliveupdate-style client over the raw /dev/liveupdate ioctls (createSession,
 * retrieveSession, preserveFd, retrieveFd, finishSession, getName), as the kernel selftests'
 * helper library shapes them. Implemented once in the runtime's uAPI layer.
 */
export { openLiveupdate, createSession, retrieveSession, preserveFd, retrieveFd, finishSession, getName } from '@liveupdate/runtime';
