"""What `switchboard run` adds for trying the platform: the demo knowledge base (published
articles in Korean, Chinese, English and Japanese, created once), the demo hotline and a baresip
recipe to call it."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from switchboard.core import auth
from switchboard.core import grpc as sb_grpc
from switchboard.core.tls import GrpcTls
from switchboard.v1 import case_pb2, case_pb2_grpc

logger = logging.getLogger("switchboard.run")

# The embedded voice configuration's Korean hotline (services/voice-gateway's
# default_config.yaml): the dialled number picks the tenant, the queue and the language menu.
DEMO_NUMBER = "+8215880001"
BARESIP_DIR = "baresip"


@dataclass(frozen=True)
class Article:
    language: str
    title: str
    body: str
    tags: tuple[str, ...]


DEMO_ARTICLES: tuple[Article, ...] = (
    Article(
        "ko",
        "환불 요청 방법",
        "결제 후 14일 이내에는 전액 환불됩니다. 주문 번호와 결제 수단을 알려 주시면 "
        "환불을 접수하고, 카드 결제는 3~5 영업일 안에 취소됩니다.",
        ("billing", "refund"),
    ),
    Article(
        "ko",
        "비밀번호 재설정",
        "로그인 화면에서 '비밀번호 찾기'를 누르고 가입한 이메일 주소를 입력하세요. "
        "재설정 링크는 30분 동안 유효합니다.",
        ("account",),
    ),
    Article(
        "zh",
        "如何申请退款",
        "付款后14天内可全额退款。请提供订单号和付款方式，我们会受理退款；"
        "信用卡付款将在3至5个工作日内撤销。",
        ("billing", "refund"),
    ),
    Article(
        "zh",
        "重置密码",
        "在登录页面点击“忘记密码”，输入注册时使用的电子邮件地址。重置链接30分钟内有效。",
        ("account",),
    ),
    Article(
        "en",
        "How to request a refund",
        "Payments are refunded in full within 14 days. Give us the order number and the "
        "payment method; card payments are reversed within 3 to 5 business days.",
        ("billing", "refund"),
    ),
    Article(
        "en",
        "Resetting your password",
        "On the sign-in page choose 'Forgot password' and enter the email address you "
        "registered with. The reset link is valid for 30 minutes.",
        ("account",),
    ),
    Article(
        "ja",
        "返金の申し込み方法",
        "お支払いから14日以内であれば全額返金いたします。注文番号とお支払い方法をお知らせください。"
        "カード決済は3～5営業日以内に取り消されます。",
        ("billing", "refund"),
    ),
    Article(
        "ja",
        "パスワードの再設定",
        "ログイン画面で「パスワードをお忘れの方」を選び、登録したメールアドレスを入力してください。"
        "再設定リンクの有効期限は30分です。",
        ("account",),
    ),
)


async def seed_knowledge(
    target: str,
    secret: str,
    tenant: str,
    tls: GrpcTls | None = None,
    articles: tuple[Article, ...] = DEMO_ARTICLES,
) -> int:
    """Create and publish each of `articles` that the tenant's knowledge base does not have yet
    (a published article of the same language and title); returns how many were created."""
    token = auth.mint(secret, tenant, "switchboard-run", ["admin"], ttl_seconds=300)
    created = 0
    async with sb_grpc.channel(target, token, tls=tls) as channel:
        stub = case_pb2_grpc.CaseServiceStub(channel)
        for article in articles:
            found = await stub.SearchKnowledge(
                case_pb2.SearchKnowledgeRequest(
                    query=article.title, language=article.language, limit=50
                )
            )
            if any(hit.article.title == article.title for hit in found.hits):
                continue
            made = await stub.CreateArticle(
                case_pb2.CreateArticleRequest(
                    title=article.title,
                    body=article.body,
                    language=article.language,
                    tags=list(article.tags),
                )
            )
            # The editorial workflow: a draft goes to review, and is published from there.
            for state in (case_pb2.ARTICLE_STATE_REVIEW, case_pb2.ARTICLE_STATE_PUBLISHED):
                await stub.SetArticleState(
                    case_pb2.SetArticleStateRequest(article_id=made.article_id, state=state)
                )
            created += 1
    if created:
        logger.info("demo knowledge base: %d article(s) published", created)
    return created


def baresip_folder(directory: Path) -> Path:
    """A baresip configuration folder whose one account calls without registering."""
    folder = directory / BARESIP_DIR
    folder.mkdir(parents=True, exist_ok=True)
    accounts = folder / "accounts"
    if not accounts.exists():
        accounts.write_text("<sip:demo-caller@127.0.0.1>;regint=0\n")
    return folder


def baresip_recipe(directory: Path, sip: str) -> list[str]:
    """Two lines: how to call the demo hotline with baresip at the gateway's SIP address."""
    folder = baresip_folder(directory)
    address = sip.removeprefix("sip://")
    return [
        f"baresip -f {folder} -e '/dial sip:{DEMO_NUMBER}@{address}'",
        "then press 1 한국어 / 2 中文 / 3 English, and a topic (1 billing); /hangup, /quit",
    ]
