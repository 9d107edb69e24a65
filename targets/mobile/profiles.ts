// Mobile CPU profiles: threads = big cores (XNNPACK intra-op).
import type { DeviceProfile } from '../target.js';

export interface MobileProfile extends DeviceProfile {
  threads: number;
}

export const MOBILE_PROFILES: Record<string, MobileProfile> = {
  'android-arm64': { name: 'android-arm64', description: 'Android flagship arm64 (4 performance cores, SDOT/i8mm)', maxBindingBytes: Infinity, maxBufferBytes: Infinity, int8Dot: true, threads: 4 },
  'ios-arm64': { name: 'ios-arm64', description: 'iPhone arm64 (2 performance cores)', maxBindingBytes: Infinity, maxBufferBytes: Infinity, int8Dot: true, threads: 2 },
};
