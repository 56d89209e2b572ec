"""SIPp scenarios for a SIP trunk that receives our outbound INVITEs (SIPp as the UAS)."""

from __future__ import annotations

from tests.support.sipp_steps import RECV_BYE_SEND_200, in_dialog_reply

_RINGING = """
  <send>
    <![CDATA[
      SIP/2.0 180 Ringing
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:[local_ip]:[local_port];transport=[transport]>
      Content-Length: 0
    ]]>
  </send>
"""

_OK = (
    """
  <send retrans="500">
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:[local_ip]:[local_port];transport=[transport]>
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=trunk 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 8 101
      a=rtpmap:8 PCMA/8000
      a=rtpmap:101 telephone-event/8000
    ]]>
  </send>
  <recv request="ACK" crlf="true"/>
"""
    + RECV_BYE_SEND_200
)


def _final(code: int, reason: str, extra: str = "") -> str:
    return f"""
  <send>
    <![CDATA[
      SIP/2.0 {code} {reason}
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]{extra}
      Content-Length: 0
    ]]>
  </send>
  <recv request="ACK"/>
"""


def _wrap(name: str, body: str) -> str:
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="{name}">
{body}
</scenario>
"""


ANSWER = _wrap("trunk answers", '  <recv request="INVITE"/>' + _RINGING + _OK)
BUSY = _wrap("trunk busy", '  <recv request="INVITE"/>' + _final(486, "Busy Here"))
_CANCEL_OK = """
  <recv request="CANCEL"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0
    ]]>
  </send>
"""

# Rings until we CANCEL: 200 to the CANCEL, 487 to the INVITE, then our ACK.
NO_ANSWER = _wrap(
    "trunk no answer",
    '  <recv request="INVITE"/>'
    + _RINGING
    + _CANCEL_OK
    + """
  <send>
    <![CDATA[
      SIP/2.0 487 Request Terminated
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      CSeq: 1 INVITE
      Content-Length: 0
    ]]>
  </send>
  <recv request="ACK"/>
""",
)

# The callee picks up as our CANCEL arrives: 200 to the CANCEL, then 200 (not 487) to the
# INVITE, as when the two cross on the wire (RFC 3261 §9.1). We must ACK that 200 and BYE.
ANSWER_CROSSES_CANCEL = _wrap(
    "trunk answers across our CANCEL",
    '  <recv request="INVITE"/>'
    + _RINGING
    + _CANCEL_OK
    + _OK.replace("[last_CSeq:]", "CSeq: 1 INVITE", 1),
)


def challenge(expected_response: str) -> str:
    """Challenges with 407; the second INVITE must carry Proxy-Authorization with the digest
    response the test computed independently (RFC 2617, no qop)."""
    return _wrap(
        "trunk challenges",
        '  <recv request="INVITE"/>'
        + _final(407, "Proxy Authentication Required",
                 '\n      Proxy-Authenticate: Digest realm="trunk", nonce="4f1d2c9a"')
        + f"""
  <recv request="INVITE">
    <action>
      <ereg regexp="response=.{expected_response}." search_in="hdr" header="Proxy-Authorization:"
            check_it="true" assign_to="digest"/>
    </action>
  </recv>
  <Reference variables="digest"/>
"""
        + _OK,
    )


def _notify(cseq: int, frag: str) -> str:
    """A NOTIFY from the trunk (UAS side of the dialog) reporting the REFER's progress."""
    return f"""
  <send retrans="500">
    <![CDATA[
      NOTIFY [$contact] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From:[$local]
      To:[$remote]
      [last_Call-ID:]
      CSeq: {cseq} NOTIFY
      Contact: <sip:[local_ip]:[local_port];transport=[transport]>
      Max-Forwards: 70
      Event: refer
      Subscription-State: {"terminated;reason=noresource" if frag.startswith("200") else "active;expires=60"}
      Content-Type: message/sipfrag;version=2.0
      Content-Length: [len]

      SIP/2.0 {frag}
    ]]>
  </send>
  <recv response="200"/>
"""


# Plivo's documented REFER flow on a trunk call: 202, NOTIFY 100 then 200 (sipfrag), then the
# trunk BYEs our leg. The Refer-To must name the trunk's domain (here the trunk is 127.0.0.1).
# An early BYE from us is an unexpected message: SIPp fails.
REFER_ACCEPTED = _wrap(
    "trunk accepts REFER",
    '  <recv request="INVITE"/>'
    + _RINGING
    + _OK.split('  <recv request="BYE"/>')[0]
    + """
  <recv request="REFER">
    <action>
      <ereg regexp="sip:\\+919812345678@127\\.0\\.0\\.1>" search_in="hdr" header="Refer-To:"
            check_it="true" assign_to="referto"/>
      <ereg regexp=".*" search_in="hdr" header="From:" assign_to="remote"/>
      <ereg regexp=".*" search_in="hdr" header="To:" assign_to="local"/>
      <ereg regexp="sip:[^>;]*" search_in="hdr" header="Contact:" assign_to="contact"/>
    </action>
  </recv>
  <Reference variables="referto"/>"""
    + in_dialog_reply("202 Accepted")
    + _notify(1, "100 Trying")
    + _notify(2, "200 OK")
    + """
  <pause milliseconds="200"/>
  <send retrans="500">
    <![CDATA[
      BYE [$contact] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From:[$local]
      To:[$remote]
      [last_Call-ID:]
      CSeq: 3 BYE
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <recv response="200"/>
""",
)
