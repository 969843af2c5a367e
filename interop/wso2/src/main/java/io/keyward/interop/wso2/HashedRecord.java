package io.keyward.interop.wso2;

import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.HashMap;
import java.util.HexFormat;
import java.util.Map;
import org.json.JSONObject;

/**
 * A hashed client secret as WSO2 stores it (docs/wso2-interop.md section 5, the OAuth
 * component's HashingPersistenceProcessor): MessageDigest over the secret's bytes, lowercase
 * hex, in an org.json JSONObject built from a HashMap with "hash" and "algorithm". The key
 * order of toString() is whatever org.json 20250517's HashMap gives; WSO2 compares the
 * stored string exactly, so that order is part of the format.
 */
final class HashedRecord {

    private HashedRecord() {}

    static String render(byte[] secret, String algorithm) throws Wso2Crypto.CryptoFailure {
        MessageDigest digest;
        try {
            digest = MessageDigest.getInstance(algorithm);
        } catch (NoSuchAlgorithmException unknown) {
            throw new Wso2Crypto.CryptoFailure("no MessageDigest " + algorithm);
        }
        Map<String, Object> fields = new HashMap<>();
        fields.put("hash", HexFormat.of().formatHex(digest.digest(secret)));
        // Written verbatim as configured, not as the JDK names the algorithm.
        fields.put("algorithm", algorithm);
        return new JSONObject(fields).toString();
    }
}
