package io.keyward.interop.wso2;

import java.nio.ByteBuffer;
import java.security.SecureRandom;

/**
 * The IV WSO2 writes (docs/wso2-interop.md section 3): a time-based (version 1) UUID, most then
 * least significant bits, big-endian, in the first 16 bytes; zeros up to the IV length
 * (128 bytes in API Manager 4.7, 16 in older releases).
 */
final class TimeBasedUuid {

    /** 100-nanosecond intervals between the Gregorian epoch (1582-10-15) and the Unix epoch. */
    private static final long GREGORIAN_OFFSET = 0x01B21DD213814000L;
    private static final SecureRandom RANDOM = new SecureRandom();
    /** Random node with the multicast bit set (RFC 4122 section 4.5: not a MAC address). */
    private static final long NODE = (RANDOM.nextLong() & 0xFFFF_FFFF_FFFFL) | 0x0100_0000_0000L;
    private static final long CLOCK_SEQUENCE = RANDOM.nextInt(1 << 14);
    private static long lastTimestamp;

    private TimeBasedUuid() {}

    static byte[] initializationVector(int length) {
        ByteBuffer buffer = ByteBuffer.allocate(length);
        long timestamp = nextTimestamp();
        long timeLow = timestamp & 0xFFFF_FFFFL;
        long timeMid = (timestamp >>> 32) & 0xFFFFL;
        long timeHigh = (timestamp >>> 48) & 0x0FFFL;
        buffer.putLong((timeLow << 32) | (timeMid << 16) | 0x1000L | timeHigh);
        buffer.putLong(0x8000_0000_0000_0000L | (CLOCK_SEQUENCE << 48) | NODE);
        return buffer.array();
    }

    /** Strictly increasing, so two IVs from one process never repeat under one key. */
    private static synchronized long nextTimestamp() {
        long now = System.currentTimeMillis() * 10_000L + GREGORIAN_OFFSET;
        lastTimestamp = Math.max(now, lastTimestamp + 1);
        return lastTimestamp;
    }
}
