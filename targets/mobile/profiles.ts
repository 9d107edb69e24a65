// Mobile CPU profiles: threads = big cores (XNNPACK intra-op), bandwidth for the cost model.
import type { DeviceProfile } from '../target.js';

export interface MobileProfile extends DeviceProfile {
  threads: number;
}

export const MOBILE_PROFILES: Record<string, MobileProfile> = {
  'android-arm64': { name: 'android-arm64', description: 'Android flagship arm64 (4 performance cores, SDOT/i8mm)', maxBindingBytes: Infinity, maxBufferBytes: Infinity, bandwidthGBs: 60, peakGflops: 200, int8Dot: true, threads: 4 },
  'ios-arm64': { name: 'ios-arm64', description: 'iPhone arm64 (2 performance cores)', maxBindingBytes: Infinity, maxBufferBytes: Infinity, bandwidthGBs: 50, peakGflops: 150, int8Dot: true, threads: 2 },
};
