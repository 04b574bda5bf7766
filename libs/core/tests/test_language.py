from switchboard.core.language import detect


def test_scripts_and_statistics_name_the_language() -> None:
    assert detect("안녕하세요 요금 청구서 문의")[0] == "ko"
    assert detect("您好，我想咨询账单问题")[0] == "zh"
    assert detect("こんにちは、請求書について")[0] == "ja"
    assert detect("Hello, I have a question about my invoice")[0] == "en"


def test_candidates_narrow_the_answer_and_empty_text_has_none() -> None:
    assert detect("Guten Tag, ich habe eine Frage zur Rechnung")[0] == "de"
    assert detect("Guten Tag, ich habe eine Frage zur Rechnung", ["en", "ko"])[0] == "en"
    assert detect("  \n ") == ("", 0.0)
