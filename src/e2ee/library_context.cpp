#include "e2ee/library_context.hpp"

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>
#include <signal/signal_protocol.h>

#include <mutex>
#include <stdexcept>

namespace parley::e2ee {

struct library_context::provider_state {
  std::recursive_mutex lock;  // the library requires recursive locks
  EVP_MAC* hmac = nullptr;    // fetched once: fetching per message costs more than the MAC
};

namespace {

using state = library_context::provider_state;

state& of(void* user_data) { return *static_cast<state*>(user_data); }

int random_bytes(std::uint8_t* data, std::size_t len, void*) {
  return RAND_bytes(data, static_cast<int>(len)) == 1 ? 0 : SG_ERR_UNKNOWN;
}

int hmac_init(void** context, const std::uint8_t* key, std::size_t key_len, void* user_data) {
  EVP_MAC_CTX* ctx = EVP_MAC_CTX_new(of(user_data).hmac);
  if (ctx == nullptr) return SG_ERR_NOMEM;
  char digest[] = "SHA256";
  const OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
                               OSSL_PARAM_END};
  if (EVP_MAC_init(ctx, key, key_len, params) != 1) {
    EVP_MAC_CTX_free(ctx);
    return SG_ERR_UNKNOWN;
  }
  *context = ctx;
  return 0;
}

int hmac_update(void* context, const std::uint8_t* data, std::size_t len, void*) {
  return EVP_MAC_update(static_cast<EVP_MAC_CTX*>(context), data, len) == 1 ? 0 : SG_ERR_UNKNOWN;
}

int hmac_final(void* context, signal_buffer** output, void*) {
  std::uint8_t md[EVP_MAX_MD_SIZE];
  std::size_t len = 0;
  if (EVP_MAC_final(static_cast<EVP_MAC_CTX*>(context), md, &len, sizeof md) != 1) {
    return SG_ERR_UNKNOWN;
  }
  *output = signal_buffer_create(md, len);
  return *output ? 0 : SG_ERR_NOMEM;
}

void hmac_cleanup(void* context, void*) { EVP_MAC_CTX_free(static_cast<EVP_MAC_CTX*>(context)); }

int sha512_init(void** context, void*) {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  if (ctx == nullptr) return SG_ERR_NOMEM;
  if (EVP_DigestInit_ex(ctx, EVP_sha512(), nullptr) != 1) {
    EVP_MD_CTX_free(ctx);
    return SG_ERR_UNKNOWN;
  }
  *context = ctx;
  return 0;
}

int sha512_update(void* context, const std::uint8_t* data, std::size_t len, void*) {
  return EVP_DigestUpdate(static_cast<EVP_MD_CTX*>(context), data, len) == 1 ? 0 : SG_ERR_UNKNOWN;
}

int sha512_final(void* context, signal_buffer** output, void*) {
  auto* ctx = static_cast<EVP_MD_CTX*>(context);
  std::uint8_t md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_DigestFinal_ex(ctx, md, &len) != 1) return SG_ERR_UNKNOWN;
  // The contract: the context is ready for another digest afterwards.
  if (EVP_DigestInit_ex(ctx, EVP_sha512(), nullptr) != 1) return SG_ERR_UNKNOWN;
  *output = signal_buffer_create(md, len);
  return *output ? 0 : SG_ERR_NOMEM;
}

void sha512_cleanup(void* context, void*) { EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(context)); }

const EVP_CIPHER* aes(int cipher, std::size_t key_len) {
  const bool cbc = cipher == SG_CIPHER_AES_CBC_PKCS5;
  if (!cbc && cipher != SG_CIPHER_AES_CTR_NOPADDING) return nullptr;
  switch (key_len) {
    case 16:
      return cbc ? EVP_aes_128_cbc() : EVP_aes_128_ctr();
    case 24:
      return cbc ? EVP_aes_192_cbc() : EVP_aes_192_ctr();
    case 32:
      return cbc ? EVP_aes_256_cbc() : EVP_aes_256_ctr();
    default:
      return nullptr;
  }
}

int run_cipher(bool encrypt, signal_buffer** output, int cipher, const std::uint8_t* key,
               std::size_t key_len, const std::uint8_t* iv, std::size_t iv_len,
               const std::uint8_t* input, std::size_t input_len) {
  const EVP_CIPHER* type = aes(cipher, key_len);
  if (type == nullptr || iv_len != 16) return SG_ERR_INVAL;
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  if (ctx == nullptr) return SG_ERR_NOMEM;
  int result = SG_ERR_UNKNOWN;
  signal_buffer* out = signal_buffer_alloc(input_len + 16);  // one block of padding at most
  int n = 0;
  int tail = 0;
  if (out != nullptr && EVP_CipherInit_ex(ctx, type, nullptr, key, iv, encrypt ? 1 : 0) == 1 &&
      EVP_CIPHER_CTX_set_padding(ctx, cipher == SG_CIPHER_AES_CBC_PKCS5 ? 1 : 0) == 1 &&
      EVP_CipherUpdate(ctx, signal_buffer_data(out), &n, input, static_cast<int>(input_len)) == 1 &&
      EVP_CipherFinal_ex(ctx, signal_buffer_data(out) + n, &tail) == 1) {
    // signal_buffer has no shrink: copy the used part.
    *output = signal_buffer_create(signal_buffer_data(out), static_cast<std::size_t>(n + tail));
    result = *output ? 0 : SG_ERR_NOMEM;
  }
  signal_buffer_bzero_free(out);
  EVP_CIPHER_CTX_free(ctx);
  return result;
}

int encrypt(signal_buffer** output, int cipher, const std::uint8_t* key, std::size_t key_len,
            const std::uint8_t* iv, std::size_t iv_len, const std::uint8_t* plaintext,
            std::size_t plaintext_len, void*) {
  return run_cipher(true, output, cipher, key, key_len, iv, iv_len, plaintext, plaintext_len);
}

int decrypt(signal_buffer** output, int cipher, const std::uint8_t* key, std::size_t key_len,
            const std::uint8_t* iv, std::size_t iv_len, const std::uint8_t* ciphertext,
            std::size_t ciphertext_len, void*) {
  return run_cipher(false, output, cipher, key, key_len, iv, iv_len, ciphertext, ciphertext_len);
}

void lock(void* user_data) { of(user_data).lock.lock(); }
void unlock(void* user_data) { of(user_data).lock.unlock(); }

}  // namespace

library_context::library_context() : state_(std::make_unique<provider_state>()) {
  state_->hmac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
  if (state_->hmac == nullptr) throw std::runtime_error("OpenSSL has no HMAC");
  if (signal_context_create(&context_, state_.get()) != 0) {
    EVP_MAC_free(state_->hmac);
    throw std::runtime_error("cannot create the Signal protocol context");
  }
  signal_crypto_provider provider{};
  provider.random_func = random_bytes;
  provider.hmac_sha256_init_func = hmac_init;
  provider.hmac_sha256_update_func = hmac_update;
  provider.hmac_sha256_final_func = hmac_final;
  provider.hmac_sha256_cleanup_func = hmac_cleanup;
  provider.sha512_digest_init_func = sha512_init;
  provider.sha512_digest_update_func = sha512_update;
  provider.sha512_digest_final_func = sha512_final;
  provider.sha512_digest_cleanup_func = sha512_cleanup;
  provider.encrypt_func = encrypt;
  provider.decrypt_func = decrypt;
  provider.user_data = state_.get();
  signal_context_set_crypto_provider(context_, &provider);
  signal_context_set_locking_functions(context_, lock, unlock);
}

library_context::~library_context() {
  signal_context_destroy(context_);
  EVP_MAC_free(state_->hmac);
}

}  // namespace parley::e2ee
