// AudioPipeline: a clip file through decode, the encoder's front end, the encoder (Whisper rows
// truncated to the clip) and the speech adapter equals the stages run one by one; a batch equals
// its clips alone; limits and damaged files are clear errors naming the field. Random weights
// (the stages themselves are checked against transformers in tests/encoders/{audio,speech}).
#include "encoders/multimodal/audio_pipeline.h"

#include <filesystem>
#include <fstream>

#include "encoders/audio/wavlm_features.h"
#include "encoders/multimodal/media_router.h"
#include "encoders/speech/whisper_random.h"
#include "encoders/vision/random_vit.h"
#include "engine/checkpoint/random_weights.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace modrwkv::encoders {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

const fs::path kAudio = fs::path(MODRWKV_GOLDEN_DIR) / "audio";
constexpr int kModelDim = 32;  // the language model's width the adapter maps to

std::string ReadBytes(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

absl::Span<const uint8_t> Bytes(const std::string& s) {
  return absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

OwnedTensor F32(const std::string& name, std::vector<int64_t> shape, uint64_t seed) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  const std::vector<float> v = RandomUniform(name, n, -0.2, 0.2, seed);
  OwnedTensor t;
  t.name = name;
  t.shape = std::move(shape);
  t.bytes.resize(v.size() * sizeof(float));
  std::memcpy(t.bytes.data(), v.data(), t.bytes.size());
  return t;
}

// Generation A's speech adapter (conv k3 s2 padding 2, linear, relu, linear) for encoder width d.
std::unique_ptr<AdapterChain> SpeechAdapter(int d, std::vector<OwnedTensor>* keep) {
  *keep = {F32("conv.weight", {2 * kModelDim, d, 3}, 5),
           F32("conv.bias", {2 * kModelDim}, 5),
           F32("proj.0.weight", {2 * kModelDim, 2 * kModelDim}, 5),
           F32("proj.0.bias", {2 * kModelDim}, 5),
           F32("proj.2.weight", {kModelDim, 2 * kModelDim}, 5),
           F32("proj.2.bias", {kModelDim}, 5)};
  auto chain = AdapterChain::Create(SpeechAdapterA(2), ViewsOf(*keep), "");
  EXPECT_TRUE(chain.ok()) << chain.status();
  return chain.ok() ? *std::move(chain) : nullptr;
}

WhisperConfig SmallWhisper() {
  WhisperConfig c;
  c.d_model = 64;
  c.encoder_layers = 1;
  c.encoder_attention_heads = 2;
  c.encoder_ffn_dim = 128;
  return c;  // 80 mel bins, 1500 positions: the real 30 s window
}

class WhisperAudioPipelineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const WhisperConfig c = SmallWhisper();
    weights_ = MakeRandomWhisperWeights(c, 11);
    auto w = WhisperEncoder::Create(c, ViewsOf(weights_), "");
    ASSERT_TRUE(w.ok()) << w.status();
    auto fe = WhisperFrontEnd::Create(WhisperFeatureConfig{});
    ASSERT_TRUE(fe.ok()) << fe.status();
    // The same encoder again, to run the stages by hand.
    auto w2 = WhisperEncoder::Create(c, ViewsOf(weights_), "");
    ASSERT_TRUE(w2.ok());
    encoder_ = *std::move(w2);
    auto fe2 = WhisperFrontEnd::Create(WhisperFeatureConfig{});
    ASSERT_TRUE(fe2.ok());
    front_end_ = *std::move(fe2);
    adapter_ = SpeechAdapter(c.d_model, &adapter_weights_);
    std::vector<OwnedTensor> unused;
    auto p = AudioPipeline::Create(*std::move(w), *std::move(fe), nullptr,
                                   SpeechAdapter(c.d_model, &pipeline_adapter_weights_),
                                   AudioDecodeOptions{}, "test-whisper");
    ASSERT_TRUE(p.ok()) << p.status();
    pipeline_ = *std::move(p);
  }

  std::vector<OwnedTensor> weights_, adapter_weights_, pipeline_adapter_weights_;
  std::unique_ptr<WhisperEncoder> encoder_;
  std::unique_ptr<WhisperFrontEnd> front_end_;
  std::unique_ptr<AdapterChain> adapter_;
  std::unique_ptr<AudioPipeline> pipeline_;
  cpu::ThreadPool pool_{1};
};

TEST_F(WhisperAudioPipelineTest, EqualsTheStagesRunOneByOne) {
  const std::string bytes = ReadBytes(kAudio / "files" / "speech_16k_mono.flac");
  auto rows = pipeline_->EncodeClip(Bytes(bytes), "input[0].audio", &pool_);
  ASSERT_TRUE(rows.ok()) << rows.status();

  auto samples = DecodeAudio(Bytes(bytes), AudioDecodeOptions{}, "x");
  ASSERT_TRUE(samples.ok());
  const WhisperFeatures f = front_end_->Compute(*samples);
  auto enc = encoder_->Encode(f.values, {f.valid_frames}, &pool_);
  ASSERT_TRUE(enc.ok()) << enc.status();
  const int kept = static_cast<int>((*enc)[0].size() / encoder_->dim());
  EXPECT_LT(kept, encoder_->frames());  // truncated to the clip, not the 30 s window
  std::vector<float> want;
  ASSERT_TRUE(adapter_->Run((*enc)[0], kept, &want, &pool_).ok());
  EXPECT_EQ(rows->rows, adapter_->OutputRows(kept));
  EXPECT_EQ(rows->dim, kModelDim);
  EXPECT_EQ(rows->data, want);
  EXPECT_NEAR(pipeline_->rows_per_second(), 25.0, 1.0);  // 50 encoder rows/s, conv stride 2
}

TEST_F(WhisperAudioPipelineTest, ABatchEqualsItsClipsAlone) {
  std::vector<std::shared_ptr<const PreparedItem>> prepared;
  std::vector<EmbeddingRows> alone;
  for (const char* file : {"speech_16k_mono.flac", "speech_44k_stereo.mp3"}) {
    MediaItem m;
    m.bytes = std::make_shared<const std::string>(ReadBytes(kAudio / "files" / file));
    m.kind = kAudioKind;
    m.field = file;
    auto p = pipeline_->Prepare(m, &pool_);
    ASSERT_TRUE(p.ok()) << p.status();
    prepared.push_back(*p);
    auto one = pipeline_->EncodeClip(Bytes(*m.bytes), file, &pool_);
    ASSERT_TRUE(one.ok());
    alone.push_back(*std::move(one));
  }
  std::vector<const PreparedItem*> batch = {prepared[0].get(), prepared[1].get()};
  std::vector<EmbeddingRows> out;
  ASSERT_TRUE(pipeline_->EncodeBatch(batch, &out, &pool_).ok());
  ASSERT_EQ(out.size(), 2u);
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(out[i].rows, alone[i].rows);
    ASSERT_EQ(out[i].data.size(), alone[i].data.size());
    for (size_t j = 0; j < out[i].data.size(); ++j) {
      ASSERT_NEAR(out[i].data[j], alone[i].data[j], 1e-5f * (1 + std::abs(alone[i].data[j])));
    }
  }
}

TEST_F(WhisperAudioPipelineTest, LongAndDamagedClipsAreErrorsNamingTheField) {
  // 60 s: longer than Whisper's 30 s window, refused rather than cut.
  EXPECT_NEAR(pipeline_->max_seconds(), 30.0, 1e-9);
  auto r = pipeline_->EncodeClip(Bytes(ReadBytes(kAudio / "files" / "silence_60s.flac")),
                                 "input[1].audio", &pool_);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("input[1].audio"));
  EXPECT_THAT(r.status().message(), HasSubstr("max-audio-seconds"));
  for (const char* bad : {"truncated_speech_16k_mono.flac", "corrupt_speech_44k_stereo.mp3",
                          "not_audio.txt", "empty.wav"}) {
    SCOPED_TRACE(bad);
    r = pipeline_->EncodeClip(Bytes(ReadBytes(kAudio / "bad" / bad)), "audio[0]", &pool_);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(r.status().message(), HasSubstr("audio[0]"));
  }
}

// WavLM: the folder says model_type "wavlm"; the rows are the adapter over last_hidden_state.
TEST(WavlmAudioPipelineTest, LoadsTheFolderAndEncodesAClip) {
  const fs::path folder = fs::path(MODRWKV_GOLDEN_DIR) / "wavlm" / "group";
  auto wavlm = WavlmEncoder::Load(folder.string());
  ASSERT_TRUE(wavlm.ok()) << wavlm.status();
  std::vector<OwnedTensor> keep, keep2;
  auto p = AudioPipeline::Load(folder.string(), SpeechAdapter((*wavlm)->output_dim(), &keep),
                               AudioDecodeOptions{}, "test-wavlm");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_STREQ((*p)->encoder_kind(), "wavlm");
  EXPECT_NEAR((*p)->max_seconds(), 1023 * 0.02, 1e-9);
  cpu::ThreadPool pool(1);
  const std::string bytes = ReadBytes(kAudio / "files" / "speech_8k_mono.wav");
  auto rows = (*p)->EncodeClip(Bytes(bytes), "input[0].audio", &pool);
  ASSERT_TRUE(rows.ok()) << rows.status();
  auto samples = DecodeAudio(Bytes(bytes), AudioDecodeOptions{}, "x");
  ASSERT_TRUE(samples.ok());
  const std::vector<float> norm = NormalizeWavLmInput(*samples);
  const int n = static_cast<int>(norm.size());
  const int frames = (*wavlm)->OutputFrames(n);
  std::vector<float> features(size_t{1} * frames * (*wavlm)->output_dim());
  ASSERT_TRUE((*wavlm)->Forward(norm, 1, n, absl::MakeSpan(features), &pool).ok());
  auto adapter = SpeechAdapter((*wavlm)->output_dim(), &keep2);
  std::vector<float> want;
  ASSERT_TRUE(adapter->Run(features, frames, &want, &pool).ok());
  EXPECT_EQ(rows->rows, adapter->OutputRows(frames));
  EXPECT_EQ(rows->data, want);
}

TEST(AudioPipelineTest, AFolderThatIsNoAudioEncoderIsAClearError) {
  std::vector<OwnedTensor> keep;
  auto p =
      AudioPipeline::Load((fs::path(MODRWKV_GOLDEN_DIR) / "vision_forward" / "encoder").string(),
                          SpeechAdapter(64, &keep), AudioDecodeOptions{}, "x");
  ASSERT_FALSE(p.ok());
  EXPECT_THAT(p.status().message(), HasSubstr("expected \"whisper\" or \"wavlm\""));
}

}  // namespace
}  // namespace modrwkv::encoders
