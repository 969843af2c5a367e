package io.keyward.interop.wso2;

import com.google.gson.Gson;
import com.google.gson.GsonBuilder;
import com.google.gson.JsonParseException;
import java.nio.charset.StandardCharsets;
import java.security.GeneralSecurityException;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.Base64;
import java.util.Objects;
import javax.crypto.AEADBadTagException;
import javax.crypto.Cipher;
import javax.crypto.spec.GCMParameterSpec;
import javax.crypto.spec.SecretKeySpec;

/**
 * WSO2's symmetric internal encryption as API Manager 4.7 configures it: one node's
 * [encryption] settings and what that node writes and reads.
 *
 * <p>Written from docs/wso2-interop.md: section 1 (key decoding, old_key, enable_key_id),
 * section 2 (the decrypt rule), section 3 (the ciphertext format; the self-contained
 * value of carbon-kernel's CryptoUtil around carbon-crypto's SymmetricKeyInternalCryptoProvider).
 * The JCE here is the JDK's SunJCE; WSO2 defaults to BouncyCastle, and both are standard GCM.
 */
final class Wso2Crypto {

    static final String GCM = "AES/GCM/NoPadding";
    /** Section 3, "legacy": JCE's "AES", which is AES/ECB/PKCS5Padding. */
    static final String LEGACY = "AES";
    private static final int TAG_BITS = 128;

    /**
     * Gson as WSO2 builds it for both layers: HTML escaping off, nulls omitted (Gson's
     * default), fields in declaration order.
     */
    private static final Gson GSON = new GsonBuilder().disableHtmlEscaping().create();

    private final byte[] key;
    private final byte[] oldKey;
    private final String keyId;
    private final boolean enableKeyId;

    private Wso2Crypto(byte[] key, byte[] oldKey, String keyId, boolean enableKeyId) {
        this.key = key;
        this.oldKey = oldKey;
        this.keyId = keyId;
        this.enableKeyId = enableKeyId;
    }

    /**
     * A node configured with key, old_key and enable_key_id. Section 1: a blank old_key is
     * unset, which means key; with enable_key_id off, old_key is ignored entirely; a 64- or
     * 48-character key or old_key that is not hex leaves the node with no crypto provider.
     */
    static Wso2Crypto configure(String key, String oldKey, boolean enableKeyId) throws CryptoFailure {
        if (key == null || key.isBlank()) {
            throw new CryptoFailure("no [encryption] key: WSO2 registers no symmetric crypto provider");
        }
        String effectiveOldKey = (!enableKeyId || oldKey == null || oldKey.isBlank()) ? key : oldKey;
        byte[] current = SharedKey.decode(key, "key");
        byte[] old = SharedKey.decode(effectiveOldKey, "old_key");
        return new Wso2Crypto(current, old, keyIdOf(current), enableKeyId);
    }

    /** Section 3: the key id is Base64 of SHA-256 over the decoded key bytes. */
    String keyId() {
        return keyId;
    }

    /**
     * Section 3: AES/GCM/NoPadding with a 128-bit tag and no associated data; IV = time-based
     * UUID then zeros; the inner JSON carries the cipher, the IV and (with enable_key_id) the
     * key id; an empty plaintext makes no GCM call and an empty cipher.
     */
    String encrypt(byte[] plaintext, int ivLength) throws CryptoFailure {
        byte[] iv = TimeBasedUuid.initializationVector(ivLength);
        byte[] ciphertext;
        try {
            Cipher cipher = Cipher.getInstance(GCM);
            cipher.init(Cipher.ENCRYPT_MODE, secretKey(key), new GCMParameterSpec(TAG_BITS, iv));
            ciphertext = plaintext.length == 0 ? new byte[0] : cipher.doFinal(plaintext);
        } catch (GeneralSecurityException failure) {
            throw new CryptoFailure("AES-GCM encryption failed: " + failure.getClass().getSimpleName());
        }
        Inner inner = new Inner();
        inner.cipher = base64(ciphertext);
        inner.initializationVector = base64(iv);
        inner.keyId = enableKeyId ? keyId : null;
        Outer outer = new Outer();
        outer.c = base64(GSON.toJson(inner).getBytes(StandardCharsets.UTF_8));
        outer.t = GCM;
        outer.iv = base64(iv);
        return base64(GSON.toJson(outer).getBytes(StandardCharsets.UTF_8));
    }

    /**
     * Section 3, "legacy": the self-contained "t":"AES" form (no IV, no key id), always under
     * the current key; an empty plaintext gives an empty "c".
     */
    String encryptLegacy(byte[] plaintext) throws CryptoFailure {
        byte[] ciphertext;
        try {
            Cipher cipher = Cipher.getInstance(LEGACY);
            cipher.init(Cipher.ENCRYPT_MODE, secretKey(key));
            ciphertext = plaintext.length == 0 ? new byte[0] : cipher.doFinal(plaintext);
        } catch (GeneralSecurityException failure) {
            throw new CryptoFailure("AES encryption failed: " + failure.getClass().getSimpleName());
        }
        Outer outer = new Outer();
        outer.c = base64(ciphertext);
        outer.t = LEGACY;
        return base64(GSON.toJson(outer).getBytes(StandardCharsets.UTF_8));
    }

    /**
     * What WSO2 reads from a stored value. CryptoUtil.decrypt: Base64-decode, read the outer
     * JSON by field name ("t" defaults to "RSA"), take "c"; an empty "c" is the empty
     * plaintext before any provider is asked. The provider then dispatches on "t".
     */
    byte[] decrypt(String storedValue) throws CryptoFailure {
        Outer outer = parse(decodeBase64(storedValue, "stored value"), Outer.class, "outer");
        byte[] payload = decodeBase64(Objects.requireNonNullElse(outer.c, ""), "outer c");
        if (payload.length == 0) {
            return new byte[0];
        }
        String transformation = outer.t == null || outer.t.isBlank() ? GCM : outer.t;
        if (GCM.equals(transformation)) {
            return decryptGcm(payload);
        }
        return decryptOther(payload, transformation);
    }

    /**
     * Section 2: with enable_key_id on, a ciphertext whose key id is not the current key's,
     * or that has none (a blank one counts as none), is decrypted with old_key, and never
     * retried with key. The IV comes from the inner JSON; the outer iv and kid are unused.
     * An empty inner cipher is the empty plaintext, whichever key was chosen (the key only has
     * to be a valid AES key for the cipher to initialise).
     */
    private byte[] decryptGcm(byte[] innerJson) throws CryptoFailure {
        Inner inner = parse(innerJson, Inner.class, "inner");
        String innerKeyId = inner.keyId == null || inner.keyId.isBlank() ? null : inner.keyId;
        boolean useOldKey = enableKeyId && !keyId.equals(innerKeyId);
        byte[] iv = decodeBase64(Objects.requireNonNullElse(inner.initializationVector, ""),
                "inner initializationVector");
        byte[] ciphertext = decodeBase64(Objects.requireNonNullElse(inner.cipher, ""), "inner cipher");
        String which = useOldKey ? "old_key" : "key";
        try {
            Cipher cipher = Cipher.getInstance(GCM);
            cipher.init(Cipher.DECRYPT_MODE, secretKey(useOldKey ? oldKey : key),
                    new GCMParameterSpec(TAG_BITS, iv));
            return ciphertext.length == 0 ? new byte[0] : cipher.doFinal(ciphertext);
        } catch (AEADBadTagException wrongKey) {
            throw new CryptoFailure("AES-GCM tag mismatch under " + which);
        } catch (GeneralSecurityException | IllegalArgumentException failure) {
            throw new CryptoFailure("AES-GCM decryption under " + which + " failed: "
                    + failure.getClass().getSimpleName());
        }
    }

    /**
     * Any other transformation goes to the same symmetric provider with the current key only:
     * "AES" decrypts as AES/ECB/PKCS5Padding; "RSA/..." fails, an AES key being no RSA key.
     */
    private byte[] decryptOther(byte[] ciphertext, String transformation) throws CryptoFailure {
        try {
            Cipher cipher = Cipher.getInstance(transformation);
            cipher.init(Cipher.DECRYPT_MODE, secretKey(key));
            return cipher.doFinal(ciphertext);
        } catch (GeneralSecurityException | IllegalArgumentException failure) {
            throw new CryptoFailure("decryption as " + transformation + " under key failed: "
                    + failure.getClass().getSimpleName());
        }
    }

    private static SecretKeySpec secretKey(byte[] bytes) {
        return new SecretKeySpec(bytes, "AES");
    }

    private static String keyIdOf(byte[] keyBytes) {
        try {
            return base64(MessageDigest.getInstance("SHA-256").digest(keyBytes));
        } catch (NoSuchAlgorithmException missing) {
            throw new IllegalStateException("the JDK has no SHA-256", missing);
        }
    }

    private static String base64(byte[] bytes) {
        return Base64.getEncoder().encodeToString(bytes);
    }

    /**
     * Section 3: WSO2's decoder drops a trailing partial group, so an unpadded value would
     * silently lose bytes there; this stand-in refuses it instead of guessing.
     */
    private static byte[] decodeBase64(String text, String what) throws CryptoFailure {
        if (text.length() % 4 != 0) {
            throw new CryptoFailure(what + " is not padded Base64 (length " + text.length() + ")");
        }
        try {
            return Base64.getDecoder().decode(text);
        } catch (IllegalArgumentException invalid) {
            throw new CryptoFailure(what + " is not Base64");
        }
    }

    private static <T> T parse(byte[] json, Class<T> type, String what) throws CryptoFailure {
        try {
            T parsed = GSON.fromJson(new String(json, StandardCharsets.UTF_8), type);
            if (parsed == null) {
                throw new CryptoFailure(what + " JSON is empty");
            }
            return parsed;
        } catch (JsonParseException invalid) {
            throw new CryptoFailure(what + " is not self-contained ciphertext JSON");
        }
    }

    /**
     * Section 3, outer JSON (carbon-crypto's CipherMetaDataHolder): Gson writes the fields in
     * this order and omits the null ones. "t" defaults to RSA when a value has none.
     */
    static final class Outer {
        String c;
        String t = "RSA";
        String tp;
        String tpd;
        String iv;
        String kid;
    }

    /** Section 3, inner JSON: keyId only when enable_key_id is on. */
    static final class Inner {
        String cipher;
        String initializationVector;
        String keyId;
    }

    /** A value this node cannot write or read; the message names the step, never a secret. */
    static final class CryptoFailure extends Exception {
        CryptoFailure(String message) {
            super(message);
        }
    }
}
