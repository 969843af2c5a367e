package io.keyward.interop.wso2;

import java.nio.charset.StandardCharsets;
import java.util.HexFormat;

/**
 * How WSO2 turns a deployment.toml key string into AES key bytes (docs/wso2-interop.md
 * section 1, carbon-crypto-service's determineEncodingAndEncode since 1.1.15).
 */
final class SharedKey {

    private SharedKey() {}

    /**
     * A 64- or 48-character string is hex (either case) and must be; any other string is used
     * as its bytes. WSO2 takes the platform charset there; UTF-8 here, which is what a
     * UTF-8-configured JVM does and all an ASCII key ever needs.
     */
    static byte[] decode(String secret, String setting) throws Wso2Crypto.CryptoFailure {
        if (secret.length() == 64 || secret.length() == 48) {
            try {
                return HexFormat.of().parseHex(secret);
            } catch (IllegalArgumentException notHex) {
                throw new Wso2Crypto.CryptoFailure(setting + " has " + secret.length()
                        + " characters but is not hex: WSO2 registers no internal crypto provider");
            }
        }
        return secret.getBytes(StandardCharsets.UTF_8);
    }
}
